"""geoflow: see how score-based diffusion models work.

Library modules: ``densities``, ``sde``, ``nets``, ``score``, ``train``, ``samplers``, ``metrics``,
``checkpoints`` (and ``projection``, ``images``, ``gaussian``, ``wgf``, ``jko``, ``figures``, ``export``).
No Streamlit import here.
"""

__version__ = "0.1.0"
