"""Orchestration: ProcessingPipeline and the manager that cycles many pipelines over one connection."""
