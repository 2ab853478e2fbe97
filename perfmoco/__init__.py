"""perfmoco: deep-learning motion correction and MBF mapping for stress perfusion CMR."""

from perfmoco.study import PerfusionStudy, SliceGeometry, SliceRole, SliceSeries, StudyError

__version__ = "0.1.0"

__all__ = [
    "PerfusionStudy",
    "SliceGeometry",
    "SliceRole",
    "SliceSeries",
    "StudyError",
    "__version__",
]
