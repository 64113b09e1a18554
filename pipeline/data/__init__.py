"""The data path: databases, Datum records, images, list files, transforms, data sources.

Import the submodules directly (nothing heavy loads with the package):

- ``db``: LMDB / LevelDB readers and writers (``open_reader``, ``open_writer``), written
  under a temporary name and renamed into place
- ``datum``: ``Datum`` <-> numpy (``array_to_datum``, ``datum_to_array``), images -> Datums
- ``image``: decode / resize / encode with OpenCV's numbers (``decode_image``,
  ``read_image``, ``resize_bilinear``, ``encode_image``, ``image_type``)
- ``imageset``: convert_imageset's list parsing, per-image work and HDF5 output
- ``transform``, ``rng``, ``sources``, ``prefetch``, ``windows``: what the data layers use
"""
