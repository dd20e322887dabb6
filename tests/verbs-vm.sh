#!/bin/bash
echo "SKIPPED: verbs suite: placeholder"; exit 77
