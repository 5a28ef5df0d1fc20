"""The main job on built-in data: the generated dataset (:mod:`.dataset`), the configs
adapted to it (:mod:`.configs`), and the job itself (:mod:`.job`)."""
