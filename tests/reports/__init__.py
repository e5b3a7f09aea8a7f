"""Tests of the HTML report and the evidence bundle writer."""
