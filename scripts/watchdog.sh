#!/bin/sh
# Kept for crontab lines written before the watchdog moved into the binary: `ms500-relay watchdog -c CONFIG`.
exec "${MS500_RELAY_BIN:-ms500-relay}" watchdog -c "$1"
