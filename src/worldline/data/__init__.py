"""Datasets: the on-disk format (LeRobot v3 layout), video IO, decoded-frame cache, training windows,
statistics and importers.

- :mod:`worldline.data.format`: ``Dataset`` (reader) and ``DatasetWriter`` (atomic create/append/overwrite)
- :mod:`worldline.data.video`: H.264 write/read with seeking (PyAV), resizing
- :mod:`worldline.data.cache`: ``frame_store`` decodes a camera once into a memory-mapped ``.npy``
- :mod:`worldline.data.windows`: ``EpisodeStore``, ``WindowSampler``, ``split_episodes``
- :mod:`worldline.data.stats`: ``meta/stats.json`` and ``summary`` for ``worldline data info``
- :mod:`worldline.data.importers`: video folders, LeRobot v2.x/v3, npz/HDF5 -> worldline datasets

Submodules are imported explicitly (``from worldline.data.format import Dataset``) so that
``import worldline`` does not pull in PyAV and pyarrow.
"""
