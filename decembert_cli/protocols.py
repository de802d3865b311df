"""The plugin contracts (typing.Protocol): what a package registers through our entry points.

- `decembert.corpora`: NAME = "package.module:function", a `CorpusOpener`.
  (`decembert.tasks` follows with the downstream-task issue.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Protocol

if TYPE_CHECKING:
    from decembert_cli.config.schema import DataConfig
    from decembert_cli.data.corpus import DataReport, VideoRecord


class CorpusOpener(Protocol):
    """Returns the usable videos of a pre-training corpus described by `config` (`data.*` keys).

    Videos that cannot be used are passed to `report.skip(video_id, BadVideo(reason, kind))` (which
    raises under --strict) and left out; lines fixed are counted with `report.fix`. `dims` are the
    (2D, 3D) feature widths the model expects. `progress(done, total)` may be called while scanning.
    A `VideoRecord` subclass may override `features()` and `dense_frames()` to read other layouts;
    everything after this call (split, sampling, masking, negatives) is shared.
    """

    def __call__(
        self,
        config: "DataConfig",
        report: "DataReport",
        dims: tuple[int, int],
        progress: Callable[[int, int], None] | None = None,
    ) -> list["VideoRecord"]: ...
