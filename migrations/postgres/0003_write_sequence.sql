-- Numbers every user write in its NOTIFY payload, so an instance can tell whether it has
-- applied every invalidation up to now before it serves from its caches.
CREATE SEQUENCE roster_write_seq;
