"""The curate graph as Flink and Dataflow would receive it: built with their options, never submitted.

The portable pipeline proto is what both runners consume; it must round-trip without losing a transform.
(The same graph runs end to end through PortableRunner's embedded job service in tests/test_runners.py.)
"""

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from aligndata.pipeline.config import CurateConfig
from aligndata.pipeline.curate import build_curate
from aligndata.io.inputs import InputSpec

RUNNER_ARGS = {
    "DataflowRunner": ["--project=aligndata-test", "--region=us-central1",
                       "--temp_location=gs://aligndata-bucket/tmp", "--staging_location=gs://aligndata-bucket/stage",
                       "--sdk_container_image=registry.example/aligndata:0.1.0"],
    "FlinkRunner": ["--flink_master=localhost:8081", "--environment_type=DOCKER",
                    "--environment_config=registry.example/aligndata:0.1.0", "--parallelism=4"],
}


@pytest.mark.parametrize("runner", sorted(RUNNER_ARGS))
@pytest.mark.parametrize("dry_run", [False, True])
def test_graph_round_trips_through_the_portable_proto(runner, dry_run, tmp_path):
    options = PipelineOptions([f"--runner={runner}", *RUNNER_ARGS[runner]])
    p = beam.Pipeline(options=options)
    assert type(p.runner).__name__ == runner
    cfg = CurateConfig(inputs=(str(tmp_path / "pairs.parquet"),), output=str(tmp_path / "out"), dry_run=dry_run)
    build_curate(p, cfg, [InputSpec(str(tmp_path / "pairs.parquet"), 0, "parquet", "url", "caption")])
    proto = p.to_runner_api()
    names = {t.unique_name for t in proto.components.transforms.values()}
    expected = {"Read", "Prepare", "GroupByText", "GroupByPair", "GroupByUrl", "GroupByPart", "ApplyVerdicts",
                "Report"}
    expected |= set() if dry_run else {"AssignShards", "FetchShards", "WriteRejected"}
    assert expected <= {name.split("/")[0] for name in names}
    again = beam.Pipeline.from_runner_api(proto, p.runner, options).to_runner_api()
    assert {t.unique_name for t in again.components.transforms.values()} == names
    assert set(again.components.pcollections) == set(proto.components.pcollections)
