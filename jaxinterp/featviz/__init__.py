"""jaxinterp.featviz."""
