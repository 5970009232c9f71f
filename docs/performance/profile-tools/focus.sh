#!/bin/sh
# focus.sh PROFILE SAMPLE_INDEX FOCUS [IGNORE]: the part of the profile under FOCUS
if [ -n "$4" ]; then ign="-ignore=$4"; else ign=""; fi
go tool pprof -sample_index=$2 -top -nodefraction=0 -edgefraction=0 -nodecount=100000 -focus="$3" $ign /tmp/ledgerd $1 2>/dev/null | grep "Showing nodes accounting" | sed 's/Showing nodes accounting for //'
