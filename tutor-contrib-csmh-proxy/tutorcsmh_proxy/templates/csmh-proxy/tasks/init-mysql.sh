echo "Creating the extended history database {{ CSMH_PROXY_EXTENDED_DATABASE }} for csmh-proxy..."
{% if CSMH_PROXY_CSMH_HOST -%}
mysql -u "{{ CSMH_PROXY_CSMH_ROOT_USERNAME }}" --password="{{ CSMH_PROXY_CSMH_ROOT_PASSWORD }}" --host "{{ CSMH_PROXY_CSMH_HOST }}" --port {{ CSMH_PROXY_CSMH_PORT }} <<'SQL'
{%- else -%}
mysql -u "{{ MYSQL_ROOT_USERNAME }}" --password="{{ MYSQL_ROOT_PASSWORD }}" --host "{{ MYSQL_HOST }}" --port {{ MYSQL_PORT }} <<'SQL'
{%- endif %}
{% include "csmh-proxy/tasks/init.sql" %}
SQL
