#!/bin/sh
# One image, two roles. Beam runners (Dataflow, Flink with --environment_type DOCKER) start the container with
# the SDK harness flags below: hand those to Beam's boot program. Anything else is an aligndata command.
case "$1" in
  --id=*|--logging_endpoint=*|--artifact_endpoint=*|--provision_endpoint=*|--control_endpoint=*|--semi_persist_dir=*)
    exec /opt/apache/beam/boot "$@" ;;
esac
exec aligndata "$@"
