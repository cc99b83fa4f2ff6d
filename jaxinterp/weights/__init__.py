"""jaxinterp.weights."""
