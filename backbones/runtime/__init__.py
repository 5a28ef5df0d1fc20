"""Running models from configs: config loading and model building (:mod:`.models`), the
train / test runners (:mod:`.engine`), and the command-line pieces the tools share
(:mod:`.cli`)."""
