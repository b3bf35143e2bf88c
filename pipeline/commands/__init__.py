"""What users run: extract, render, package and the command line."""
