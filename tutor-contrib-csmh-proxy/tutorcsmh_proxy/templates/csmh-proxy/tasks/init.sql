-- The extended table's database, as Tutor's server runs (utf8mb4), and what edxapp's user needs there: its
-- statements reach the extended table through the proxy, and csmh-proxy's init, migrate, verify and
-- truncate-old log in as that user to create and fill the table.
CREATE DATABASE IF NOT EXISTS {{ CSMH_PROXY_EXTENDED_DATABASE }} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
{%- if CSMH_PROXY_CSMH_HOST %}
CREATE USER IF NOT EXISTS '{{ CSMH_PROXY_CSMH_USER }}'@'%' IDENTIFIED BY '{{ CSMH_PROXY_CSMH_PASSWORD }}';
{%- endif %}
GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER ON {{ CSMH_PROXY_EXTENDED_DATABASE }}.* TO '{% if CSMH_PROXY_CSMH_HOST %}{{ CSMH_PROXY_CSMH_USER }}{% else %}{{ OPENEDX_MYSQL_USERNAME }}{% endif %}'@'%';
