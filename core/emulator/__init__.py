"""A local Firebase Realtime Database emulator that the unchanged firebase-admin SDK can talk to."""
