"""Helpers the test suite shares: real local servers, sample events, a Lambda context."""
