"""Stage 1 (MAGREF Appendix B.1): scene splitting, motion and aesthetic scores, captions."""
