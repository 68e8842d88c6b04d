from __future__ import annotations

import pytest

import skyrec.progress as progress_mod
from skyrec.progress import track


def test_non_interactive_progress_reports_to_the_log_and_yields_everything(capsys: pytest.CaptureFixture,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress_mod, "interactive", lambda: False)
    assert list(track(range(5), "scoring shards", total=5, unit="shards")) == [0, 1, 2, 3, 4]
    err = capsys.readouterr().err
    assert "[progress] scoring shards: 5/5 shards" in err
