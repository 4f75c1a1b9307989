"""Technician tools: gateway enrolment and line set-up."""
