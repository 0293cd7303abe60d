"""Configuration: settings from the environment and .env files, logging, and the secrets to mask."""
