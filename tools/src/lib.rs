//! ringmq-hist and ringmq-tune (to come, issue 5).
