"""Input and output of job-ad text: clean-up and language signals, and the one reader of job-ad files."""
