"""Latency statistics: true percentiles and the reference's trimmed means, kept apart."""
import numpy as np
import pytest

from effnet.train.metrics import latency_stats


def test_true_percentiles_and_trimmed_means_differ():
    times = [0.010] * 90 + [0.100] * 10          # 10% of batches are slow
    stats = latency_stats(times)
    assert stats["latency_p50"] == pytest.approx(10.0)
    assert stats["latency_p95"] == pytest.approx(100.0)   # a real percentile sees the slow tail
    assert stats["latency_95pct"] == pytest.approx((90 * 10 + 5 * 100) / 95)  # mean of fastest 95%
    assert stats["latency_90pct"] == pytest.approx(10.0)
    assert stats["latency_pct"] == pytest.approx((90 * 10 + 9 * 100) / 99)
    assert stats["latency_p99"] == pytest.approx(np.percentile(np.array(times) * 1000, 99))


def test_no_timings_is_an_error():
    with pytest.raises(ValueError):
        latency_stats([])
