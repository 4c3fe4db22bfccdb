"""Conversion jobs: durable rows claimed by worker processes under a renewable lease."""
