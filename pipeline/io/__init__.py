"""Input and output: job-ad text (clean-up and language signals, and the one reader of job-ad files), the corpus'
boilerplate lines, and the table of named parts through which every component saves its state (``serialization``)."""
