"""The distant-supervision corpus: job ads -> sentences labelled with the ESCO skills the matcher finds."""
