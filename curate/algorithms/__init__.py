"""The algorithms the stages, evaluation and calibration share, with no stage in them.

Each module holds one method with its paper and defaults at the top:

* ``textstats``: text statistics (Gopher / C4 / FineWeb rules) and the tokenizer-free token count;
* ``lsh``: vectorised shingles, MinHash signatures, banding, candidate pairs, clusters;
* ``latex``: the lexical layer of answer checking (LaTeX delimiters, wrappers, brackets);
* ``answers``: final-answer extraction and numeric / textual equivalence;
* ``symbolic``: SymPy / math-verify equivalence with the guards that bound it;
* ``allocate``: rows per prompt by difficulty (Uniform, Prop2Diff, histogram) under a budget,
  and those strategies as the tagged sub-configs ``difficulty`` and ``rejection_sample`` share;
* ``llm2llm_text``: LLM2LLM's teacher request, its numbered-item parser and ROUGE-L near-copies;
* ``ot``: GOT-D's calibrated OT gradients through POT's block-wise Sinkhorn;
* ``dsir``: hashed n-gram importance weights and Gumbel top-k;
* ``rds``: RDS+ round-robin over target examples and tasks;
* ``language``: py3langid's language identification; ``pii``: e-mail, IP and phone patterns;
* ``quality``: quality classifiers trained here (DCLM's fastText, a hashed n-gram logistic
  regression), their held-out measures;
* ``tokens``: token counts of texts and of whole versions, with a named tokenizer or without.

Layering: algorithms import core (errors, records, fingerprint) and the models layer only;
never a stage, the runner, a recipe or the CLI.
"""
