"""newsbeam: news feeds and files to a labelled, Hive-partitioned Parquet dataset."""

__version__ = "0.1.0"
