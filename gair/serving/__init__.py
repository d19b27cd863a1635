"""GAIR embeddings where users work: the MLflow pyfunc model (``pyfunc``), the preprocessing
shared with training (``embedder``), and the batch export to GeoParquet (``batch``,
``geoparquet``, ``plots``) behind ``jobs/embed.py``. MLflow and Ray are imported only by
``pyfunc`` and ``batch``."""
