"""The pointer-format core, shared by training, export, the runtime and the benchmarks.

``forms`` (TOP bracket trees), ``pointer`` (words with offsets; tree <-> pointer target), ``vocab``
(the target symbols), ``spec`` (the decoding contract written as pointer.json) and ``source`` (how
an utterance becomes encoder ids). numpy and sentencepiece at most: the runtime imports these.
"""
