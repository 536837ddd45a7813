"""iam: the roster (genesis now; admission, suspension and rotation later) and trust."""
