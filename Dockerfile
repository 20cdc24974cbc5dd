# aligndata: the CLI, and a Beam custom SDK container for Dataflow (--sdk_container_image) and Flink/portable
# runners (--environment_type DOCKER --environment_config IMAGE).
#
#   docker build -t aligndata .
#   docker run --rm -v "$PWD:/data" aligndata curate --input /data/pairs.parquet --output /data/shards
#
# The base image carries the Beam SDK harness (/opt/apache/beam/boot) of the same Beam version we install.
ARG PYTHON_VERSION=3.11
ARG BEAM_VERSION=2.77.0
FROM apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION}
# ARGs declared before FROM are visible only to FROM itself; re-declare to use it below.
ARG BEAM_VERSION

ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /opt/aligndata

# Dependencies first so code edits do not invalidate the dependency layer.
COPY pyproject.toml README.md ./
COPY aligndata/__init__.py aligndata/__init__.py
RUN pip install --upgrade pip \
 && pip install "apache-beam[gcp,aws]==${BEAM_VERSION}" \
 && pip install .

COPY aligndata ./aligndata
RUN pip install --no-deps . && aligndata --version

# Beam workers start the container with SDK-harness flags (handed to /opt/apache/beam/boot); anything else runs
# the aligndata CLI.
COPY docker/entrypoint.sh /usr/local/bin/aligndata-entrypoint
ENTRYPOINT ["/usr/local/bin/aligndata-entrypoint"]
CMD ["--help"]
