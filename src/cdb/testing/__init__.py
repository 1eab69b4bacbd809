"""What users need to test their own strategies and services (in-memory bus, fakes,
throwaway servers)."""
