"""Checkpoints: safe reading (:mod:`.io`), layouts as data with one dispatcher
(:mod:`.layouts`; each family's layouts in its own file here), and checked loading
(:mod:`.loading`)."""
