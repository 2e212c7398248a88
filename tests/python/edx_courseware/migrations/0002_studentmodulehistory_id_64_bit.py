"""StudentModuleHistory's id becomes a 64-bit BigAutoField in Django's state only, as the model now declares it
(`id = models.BigAutoField(primary_key=True)`). No SQL is sent: csmh-proxy writes the history to the extended table,
whose id is already 64-bit, and the old table is left as it is."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("courseware", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="studentmodulehistory",
                    name="id",
                    field=models.BigAutoField(primary_key=True, serialize=False),
                ),
            ],
        ),
    ]
