"""Genome annotation: per-base CDS labels from GenBank/GTF, gene calls to GFF3, and their evaluation."""
