"""jaxinterp.envs."""
