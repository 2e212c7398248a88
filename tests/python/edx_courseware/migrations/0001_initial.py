"""The tables the test fixture creates (`csmh_proxy::sandbox`), as Django's state: edx-platform's migrations of
these models up to today, in one. A test records it as applied without running it (`migrate --fake`), as an edxapp
site's database has it."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = []

    operations = [
        migrations.CreateModel(
            name="User",
            fields=[
                ("id", models.AutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("username", models.CharField(max_length=150, unique=True)),
            ],
            options={
                "db_table": "auth_user",
                "managed": False,
            },
        ),
        migrations.CreateModel(
            name="StudentModule",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("module_type", models.CharField(db_index=True, default="problem", max_length=32)),
                ("module_state_key", models.CharField(db_column="module_id", max_length=255)),
                ("course_id", models.CharField(db_index=True, max_length=255)),
                ("state", models.TextField(blank=True, null=True)),
                ("grade", models.FloatField(blank=True, db_index=True, null=True)),
                ("max_grade", models.FloatField(blank=True, null=True)),
                ("done", models.CharField(default="na", max_length=8)),
                ("created", models.DateTimeField(auto_now_add=True, db_index=True)),
                ("modified", models.DateTimeField(auto_now=True, db_index=True)),
                (
                    "student",
                    models.ForeignKey(
                        db_constraint=False, on_delete=django.db.models.deletion.CASCADE, to="courseware.user"
                    ),
                ),
            ],
            options={
                "db_table": "courseware_studentmodule",
                "unique_together": {("student", "module_state_key", "course_id")},
            },
        ),
        migrations.CreateModel(
            name="StudentModuleHistory",
            fields=[
                ("id", models.AutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("version", models.CharField(blank=True, db_index=True, max_length=255, null=True)),
                ("created", models.DateTimeField(db_index=True)),
                ("state", models.TextField(blank=True, null=True)),
                ("grade", models.FloatField(blank=True, null=True)),
                ("max_grade", models.FloatField(blank=True, null=True)),
                (
                    "student_module",
                    models.ForeignKey(
                        db_constraint=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        to="courseware.studentmodule",
                    ),
                ),
            ],
            options={
                "db_table": "courseware_studentmodulehistory",
                "get_latest_by": "created",
            },
        ),
    ]
