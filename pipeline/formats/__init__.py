"""Files in and out: prototxt text, binary protobuf files, HDF5 weights, upgrades.

Nothing here knows how to run a net; everything here raises
``pipeline.errors.ParseError`` (file, line, column, what was expected) on bad
input. Import the submodules directly:

- ``prototxt``: net/solver text files (read, detect kind, write)
- ``binary``: ``.caffemodel``, ``.binaryproto``, ``.solverstate`` and other binary messages
- ``hdf5``: weights and solver states in Caffe's HDF5 layout
- ``blob``: BlobProto <-> numpy
- ``upgrade``: V0 -> V1 -> V2 layers, legacy inputs, solver types
- ``forks``: fields and layer types of well-known Caffe forks: attribution, clear errors
- ``fork_binary``: fork parameters stored at numbers BVLC uses, re-read by layer type
"""
