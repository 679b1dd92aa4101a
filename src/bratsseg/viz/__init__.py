"""Figures: functions returning matplotlib Figures, never shown."""
