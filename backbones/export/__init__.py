"""Export to mobile runtimes: graph preparation (:mod:`.prepare`), what is exported
(:mod:`.targets`), the formats, one record each with its runner (:mod:`.formats`), export
with parity checks (:mod:`.convert`), and the latency benchmark (:mod:`.benchmark`)."""
