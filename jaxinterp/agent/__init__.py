"""jaxinterp.agent."""
