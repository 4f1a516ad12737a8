//! ringmq-swarm (to come, issue 5).
