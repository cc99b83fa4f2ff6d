"""jaxinterp.models."""
