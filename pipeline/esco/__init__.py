"""The ESCO knowledge base: skills, groups, hierarchy and occupations read from the official CSV export."""
