"""Repository-wide pytest setup: hypothesis profiles (the labcheck plugin loads by entry point)."""
import os

from hypothesis import HealthCheck, settings

# Profiles chosen by HYPOTHESIS_PROFILE; CI gets "ci" automatically (derandomized, no deadline).
settings.register_profile("dev", max_examples=25, deadline=None)
settings.register_profile(
    "ci", max_examples=25, deadline=None, derandomize=True, database=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
# thorough: explore afresh each run (no example database), as a property must hold beyond CI's examples
settings.register_profile("thorough", max_examples=500, deadline=None, database=None)
settings.load_profile(os.getenv("HYPOTHESIS_PROFILE", "ci" if os.getenv("CI") else "dev"))
