-- laneIM's tables in the system of record (MySQL or MariaDB).
-- Applied by `laneim migrate` (idempotent). The binlog sync worker follows
-- the first four tables; it ignores every other table.

CREATE TABLE IF NOT EXISTS users (
  id         VARCHAR(64)  NOT NULL PRIMARY KEY,
  name       VARCHAR(255) NOT NULL DEFAULT '',
  disabled   TINYINT(1)   NOT NULL DEFAULT 0,
  updated_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS rooms (
  id   VARCHAR(64)  NOT NULL PRIMARY KEY,
  name VARCHAR(255) NOT NULL DEFAULT '',
  kind VARCHAR(32)  NOT NULL DEFAULT 'group'
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS room_members (
  room_id   VARCHAR(64)  NOT NULL,
  user_id   VARCHAR(64)  NOT NULL,
  role      VARCHAR(32)  NOT NULL DEFAULT 'member',
  joined_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  PRIMARY KEY (room_id, user_id),
  KEY by_user (user_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS blocks (
  user_id    VARCHAR(64) NOT NULL,
  blocked_id VARCHAR(64) NOT NULL,
  PRIMARY KEY (user_id, blocked_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- The ids of deleted users. The api gateway records an id here when it
-- deletes the user, and refuses to create a user under it again: a new
-- account under an old id would see the old one's 1:1 conversations and
-- log in with tokens minted for it. If you write users yourself, do the
-- same.
CREATE TABLE IF NOT EXISTS deleted_users (
  id         VARCHAR(64)  NOT NULL PRIMARY KEY,
  deleted_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
