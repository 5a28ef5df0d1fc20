"""Analysis: the papers' figures (:mod:`.papers`), parameter and FLOP counting
(:mod:`.complexity`), and the OpenMMLab metafile writer (:mod:`.metafile`)."""
