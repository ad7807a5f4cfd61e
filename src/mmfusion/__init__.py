"""mmfusion: fusion of asynchronous multimodal video sequences (MEA, MSAF and baselines)."""

__version__ = "0.1.0"
