//! BGP-4 speaker: codec, FSM, RIB and sessions.
