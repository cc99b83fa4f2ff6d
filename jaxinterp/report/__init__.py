"""jaxinterp.report."""
